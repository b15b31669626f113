"""MedAnnotAssist's task-queue server: projects, blind multi-reader tasks with leases, review, audit, export."""

__version__ = "0.1.0"
