"""MedAnnotAssist's task-queue server: projects, blind multi-reader tasks with leases, review, audit, export."""
