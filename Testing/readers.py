"""The two real readers of one CT in ../shared: TotalSegmentator's full-resolution model (example_seg) and
its fast model (example_seg_fast), on example_ct_sm's grid, with the label values of labels_total.json."""

# TotalSegmentator label value -> abdominal-organs structure id
ABDOMEN_LABELS = {
    5: "liver",
    1: "spleen",
    3: "kidney_left",
    2: "kidney_right",
    7: "pancreas",
    4: "gallbladder",
    6: "stomach",
    52: "aorta",
    63: "inferior_vena_cava",
    64: "portal_vein",
    9: "adrenal_gland_left",
    8: "adrenal_gland_right",
    19: "duodenum",
}
