"""Label metadata of the released Sapiens checkpoints, parsed from the original dataset configs
(facebookresearch/sapiens `pose/configs/_base_/datasets/{coco,coco_wholebody,goliath}.py`, the colour tables of
`lite/demo/classes_and_palettes.py` with the Goliath teeth removed, and `seg/mmseg/datasets/goliath.py`): keypoint
sets (COCO 17, COCO-WholeBody 133, Goliath 308) with their drawing colours, and the 28 Goliath body-part classes with
their palette and loss weights; Sapiens2's 29 classes and their mapping to the 28.

The tables are Python literals, not data files, so that this module also works when it is exported as remote code
(only `.py` modules are copied to a Hub repo). Standard library only.
"""

import struct


def _float32(*values: float) -> list[float]:
    """The configs' values as the original reads them: NumPy float32, widened to Python floats (0.026 →
    0.026000000536441803)."""
    return [struct.unpack("<f", struct.pack("<f", value))[0] for value in values]


KEYPOINT_SET_BY_COUNT = {17: "coco", 133: "coco_wholebody", 308: "goliath"}

# name → num_keypoints, keypoint_names, flip_indices, skeleton_links, sigmas (OKS), keypoint_weights,
# upper_body_ids / lower_body_ids (half-body augmentation), keypoint_colors / link_colors (RGB).
KEYPOINT_SETS = {
    "coco": {
        "num_keypoints": 17,
        "keypoint_names": [
            "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
            "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee",
            "left_ankle", "right_ankle",
        ],
        "flip_indices": [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15],
        "skeleton_links": [
            [15, 13], [13, 11], [16, 14], [14, 12], [11, 12], [5, 11], [6, 12], [5, 6], [5, 7], [6, 8], [7, 9],
            [8, 10], [1, 2], [0, 1], [0, 2], [1, 3], [2, 4], [3, 5], [4, 6],
        ],
        "sigmas": _float32(
            0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087,
            0.089, 0.089,
        ),
        "keypoint_weights": _float32(
            1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5,
        ),
        "upper_body_ids": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        "lower_body_ids": [11, 12, 13, 14, 15, 16],
        "keypoint_colors": [
            [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [0, 255, 0], [255, 128, 0],
            [0, 255, 0], [255, 128, 0], [0, 255, 0], [255, 128, 0], [0, 255, 0], [255, 128, 0], [0, 255, 0],
            [255, 128, 0], [0, 255, 0], [255, 128, 0],
        ],
        "link_colors": [
            [0, 255, 0], [0, 255, 0], [255, 128, 0], [255, 128, 0], [51, 153, 255], [51, 153, 255], [51, 153, 255],
            [51, 153, 255], [0, 255, 0], [255, 128, 0], [0, 255, 0], [255, 128, 0], [51, 153, 255], [51, 153, 255],
            [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255],
        ],
    },
    "coco_wholebody": {
        "num_keypoints": 133,
        "keypoint_names": [
            "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
            "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee",
            "left_ankle", "right_ankle", "left_big_toe", "left_small_toe", "left_heel", "right_big_toe",
            "right_small_toe", "right_heel", "face-0", "face-1", "face-2", "face-3", "face-4", "face-5", "face-6",
            "face-7", "face-8", "face-9", "face-10", "face-11", "face-12", "face-13", "face-14", "face-15", "face-16",
            "face-17", "face-18", "face-19", "face-20", "face-21", "face-22", "face-23", "face-24", "face-25",
            "face-26", "face-27", "face-28", "face-29", "face-30", "face-31", "face-32", "face-33", "face-34",
            "face-35", "face-36", "face-37", "face-38", "face-39", "face-40", "face-41", "face-42", "face-43",
            "face-44", "face-45", "face-46", "face-47", "face-48", "face-49", "face-50", "face-51", "face-52",
            "face-53", "face-54", "face-55", "face-56", "face-57", "face-58", "face-59", "face-60", "face-61",
            "face-62", "face-63", "face-64", "face-65", "face-66", "face-67", "left_hand_root", "left_thumb1",
            "left_thumb2", "left_thumb3", "left_thumb4", "left_forefinger1", "left_forefinger2", "left_forefinger3",
            "left_forefinger4", "left_middle_finger1", "left_middle_finger2", "left_middle_finger3",
            "left_middle_finger4", "left_ring_finger1", "left_ring_finger2", "left_ring_finger3", "left_ring_finger4",
            "left_pinky_finger1", "left_pinky_finger2", "left_pinky_finger3", "left_pinky_finger4", "right_hand_root",
            "right_thumb1", "right_thumb2", "right_thumb3", "right_thumb4", "right_forefinger1", "right_forefinger2",
            "right_forefinger3", "right_forefinger4", "right_middle_finger1", "right_middle_finger2",
            "right_middle_finger3", "right_middle_finger4", "right_ring_finger1", "right_ring_finger2",
            "right_ring_finger3", "right_ring_finger4", "right_pinky_finger1", "right_pinky_finger2",
            "right_pinky_finger3", "right_pinky_finger4",
        ],
        "flip_indices": [
            0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15, 20, 21, 22, 17, 18, 19, 39, 38, 37, 36, 35, 34,
            33, 32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 49, 48, 47, 46, 45, 44, 43, 42, 41, 40, 50, 51, 52, 53, 58, 57,
            56, 55, 54, 68, 67, 66, 65, 70, 69, 62, 61, 60, 59, 64, 63, 77, 76, 75, 74, 73, 72, 71, 82, 81, 80, 79, 78,
            87, 86, 85, 84, 83, 90, 89, 88, 112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126,
            127, 128, 129, 130, 131, 132, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107,
            108, 109, 110, 111,
        ],
        "skeleton_links": [
            [15, 13], [13, 11], [16, 14], [14, 12], [11, 12], [5, 11], [6, 12], [5, 6], [5, 7], [6, 8], [7, 9],
            [8, 10], [1, 2], [0, 1], [0, 2], [1, 3], [2, 4], [3, 5], [4, 6], [15, 17], [15, 18], [15, 19], [16, 20],
            [16, 21], [16, 22], [91, 92], [92, 93], [93, 94], [94, 95], [91, 96], [96, 97], [97, 98], [98, 99],
            [91, 100], [100, 101], [101, 102], [102, 103], [91, 104], [104, 105], [105, 106], [106, 107], [91, 108],
            [108, 109], [109, 110], [110, 111], [112, 113], [113, 114], [114, 115], [115, 116], [112, 117], [117, 118],
            [118, 119], [119, 120], [112, 121], [121, 122], [122, 123], [123, 124], [112, 125], [125, 126], [126, 127],
            [127, 128], [112, 129], [129, 130], [130, 131], [131, 132],
        ],
        "sigmas": _float32(
            0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087,
            0.089, 0.089, 0.068, 0.066, 0.066, 0.092, 0.094, 0.094, 0.042, 0.043, 0.044, 0.043, 0.04, 0.035, 0.031,
            0.025, 0.02, 0.023, 0.029, 0.032, 0.037, 0.038, 0.043, 0.041, 0.045, 0.013, 0.012, 0.011, 0.011, 0.012,
            0.012, 0.011, 0.011, 0.013, 0.015, 0.009, 0.007, 0.007, 0.007, 0.012, 0.009, 0.008, 0.016, 0.01, 0.017,
            0.011, 0.009, 0.011, 0.009, 0.007, 0.013, 0.008, 0.011, 0.012, 0.01, 0.034, 0.008, 0.008, 0.009, 0.008,
            0.008, 0.007, 0.01, 0.008, 0.009, 0.009, 0.009, 0.007, 0.007, 0.008, 0.011, 0.008, 0.008, 0.008, 0.01,
            0.008, 0.029, 0.022, 0.035, 0.037, 0.047, 0.026, 0.025, 0.024, 0.035, 0.018, 0.024, 0.022, 0.026, 0.017,
            0.021, 0.021, 0.032, 0.02, 0.019, 0.022, 0.031, 0.029, 0.022, 0.035, 0.037, 0.047, 0.026, 0.025, 0.024,
            0.035, 0.018, 0.024, 0.022, 0.026, 0.017, 0.021, 0.021, 0.032, 0.02, 0.019, 0.022, 0.031,
        ),
        "keypoint_weights": _float32(
            1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
            1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
            1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
            1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
            1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
            1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
            1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
        ),
        "upper_body_ids": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        "lower_body_ids": [11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22],
        "keypoint_colors": [
            [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [0, 255, 0], [255, 128, 0],
            [0, 255, 0], [255, 128, 0], [0, 255, 0], [255, 128, 0], [0, 255, 0], [255, 128, 0], [0, 255, 0],
            [255, 128, 0], [0, 255, 0], [255, 128, 0], [255, 128, 0], [255, 128, 0], [255, 128, 0], [255, 128, 0],
            [255, 128, 0], [255, 128, 0], [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255],
            [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255],
            [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255],
            [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255],
            [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255],
            [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255],
            [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255],
            [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255],
            [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255],
            [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255],
            [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255],
            [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 128, 0],
            [255, 128, 0], [255, 128, 0], [255, 128, 0], [255, 153, 255], [255, 153, 255], [255, 153, 255],
            [255, 153, 255], [102, 178, 255], [102, 178, 255], [102, 178, 255], [102, 178, 255], [255, 51, 51],
            [255, 51, 51], [255, 51, 51], [255, 51, 51], [0, 255, 0], [0, 255, 0], [0, 255, 0], [0, 255, 0],
            [255, 255, 255], [255, 128, 0], [255, 128, 0], [255, 128, 0], [255, 128, 0], [255, 153, 255],
            [255, 153, 255], [255, 153, 255], [255, 153, 255], [102, 178, 255], [102, 178, 255], [102, 178, 255],
            [102, 178, 255], [255, 51, 51], [255, 51, 51], [255, 51, 51], [255, 51, 51], [0, 255, 0], [0, 255, 0],
            [0, 255, 0], [0, 255, 0],
        ],
        "link_colors": [
            [0, 255, 0], [0, 255, 0], [255, 128, 0], [255, 128, 0], [51, 153, 255], [51, 153, 255], [51, 153, 255],
            [51, 153, 255], [0, 255, 0], [255, 128, 0], [0, 255, 0], [255, 128, 0], [51, 153, 255], [51, 153, 255],
            [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [0, 255, 0], [0, 255, 0],
            [0, 255, 0], [255, 128, 0], [255, 128, 0], [255, 128, 0], [255, 128, 0], [255, 128, 0], [255, 128, 0],
            [255, 128, 0], [255, 153, 255], [255, 153, 255], [255, 153, 255], [255, 153, 255], [102, 178, 255],
            [102, 178, 255], [102, 178, 255], [102, 178, 255], [255, 51, 51], [255, 51, 51], [255, 51, 51],
            [255, 51, 51], [0, 255, 0], [0, 255, 0], [0, 255, 0], [0, 255, 0], [255, 128, 0], [255, 128, 0],
            [255, 128, 0], [255, 128, 0], [255, 153, 255], [255, 153, 255], [255, 153, 255], [255, 153, 255],
            [102, 178, 255], [102, 178, 255], [102, 178, 255], [102, 178, 255], [255, 51, 51], [255, 51, 51],
            [255, 51, 51], [255, 51, 51], [0, 255, 0], [0, 255, 0], [0, 255, 0], [0, 255, 0],
        ],
    },
    "goliath": {
        "num_keypoints": 308,
        "keypoint_names": [
            "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
            "right_elbow", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
            "left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel",
            "right_thumb4", "right_thumb3", "right_thumb2", "right_thumb_third_joint", "right_forefinger4",
            "right_forefinger3", "right_forefinger2", "right_forefinger_third_joint", "right_middle_finger4",
            "right_middle_finger3", "right_middle_finger2", "right_middle_finger_third_joint", "right_ring_finger4",
            "right_ring_finger3", "right_ring_finger2", "right_ring_finger_third_joint", "right_pinky_finger4",
            "right_pinky_finger3", "right_pinky_finger2", "right_pinky_finger_third_joint", "right_wrist",
            "left_thumb4", "left_thumb3", "left_thumb2", "left_thumb_third_joint", "left_forefinger4",
            "left_forefinger3", "left_forefinger2", "left_forefinger_third_joint", "left_middle_finger4",
            "left_middle_finger3", "left_middle_finger2", "left_middle_finger_third_joint", "left_ring_finger4",
            "left_ring_finger3", "left_ring_finger2", "left_ring_finger_third_joint", "left_pinky_finger4",
            "left_pinky_finger3", "left_pinky_finger2", "left_pinky_finger_third_joint", "left_wrist",
            "left_olecranon", "right_olecranon", "left_cubital_fossa", "right_cubital_fossa", "left_acromion",
            "right_acromion", "neck", "center_of_glabella", "center_of_nose_root", "tip_of_nose_bridge",
            "midpoint_1_of_nose_bridge", "midpoint_2_of_nose_bridge", "midpoint_3_of_nose_bridge",
            "center_of_labiomental_groove", "tip_of_chin", "upper_startpoint_of_r_eyebrow",
            "lower_startpoint_of_r_eyebrow", "end_of_r_eyebrow", "upper_midpoint_1_of_r_eyebrow",
            "lower_midpoint_1_of_r_eyebrow", "upper_midpoint_2_of_r_eyebrow", "upper_midpoint_3_of_r_eyebrow",
            "lower_midpoint_2_of_r_eyebrow", "lower_midpoint_3_of_r_eyebrow", "upper_startpoint_of_l_eyebrow",
            "lower_startpoint_of_l_eyebrow", "end_of_l_eyebrow", "upper_midpoint_1_of_l_eyebrow",
            "lower_midpoint_1_of_l_eyebrow", "upper_midpoint_2_of_l_eyebrow", "upper_midpoint_3_of_l_eyebrow",
            "lower_midpoint_2_of_l_eyebrow", "lower_midpoint_3_of_l_eyebrow", "l_inner_end_of_upper_lash_line",
            "l_outer_end_of_upper_lash_line", "l_centerpoint_of_upper_lash_line", "l_midpoint_2_of_upper_lash_line",
            "l_midpoint_1_of_upper_lash_line", "l_midpoint_6_of_upper_lash_line", "l_midpoint_5_of_upper_lash_line",
            "l_midpoint_4_of_upper_lash_line", "l_midpoint_3_of_upper_lash_line", "l_outer_end_of_upper_eyelid_line",
            "l_midpoint_6_of_upper_eyelid_line", "l_midpoint_2_of_upper_eyelid_line",
            "l_midpoint_5_of_upper_eyelid_line", "l_centerpoint_of_upper_eyelid_line",
            "l_midpoint_4_of_upper_eyelid_line", "l_midpoint_1_of_upper_eyelid_line",
            "l_midpoint_3_of_upper_eyelid_line", "l_midpoint_6_of_upper_crease_line",
            "l_midpoint_2_of_upper_crease_line", "l_midpoint_5_of_upper_crease_line",
            "l_centerpoint_of_upper_crease_line", "l_midpoint_4_of_upper_crease_line",
            "l_midpoint_1_of_upper_crease_line", "l_midpoint_3_of_upper_crease_line", "r_inner_end_of_upper_lash_line",
            "r_outer_end_of_upper_lash_line", "r_centerpoint_of_upper_lash_line", "r_midpoint_1_of_upper_lash_line",
            "r_midpoint_2_of_upper_lash_line", "r_midpoint_3_of_upper_lash_line", "r_midpoint_4_of_upper_lash_line",
            "r_midpoint_5_of_upper_lash_line", "r_midpoint_6_of_upper_lash_line", "r_outer_end_of_upper_eyelid_line",
            "r_midpoint_3_of_upper_eyelid_line", "r_midpoint_1_of_upper_eyelid_line",
            "r_midpoint_4_of_upper_eyelid_line", "r_centerpoint_of_upper_eyelid_line",
            "r_midpoint_5_of_upper_eyelid_line", "r_midpoint_2_of_upper_eyelid_line",
            "r_midpoint_6_of_upper_eyelid_line", "r_midpoint_3_of_upper_crease_line",
            "r_midpoint_1_of_upper_crease_line", "r_midpoint_4_of_upper_crease_line",
            "r_centerpoint_of_upper_crease_line", "r_midpoint_5_of_upper_crease_line",
            "r_midpoint_2_of_upper_crease_line", "r_midpoint_6_of_upper_crease_line", "l_inner_end_of_lower_lash_line",
            "l_outer_end_of_lower_lash_line", "l_centerpoint_of_lower_lash_line", "l_midpoint_2_of_lower_lash_line",
            "l_midpoint_1_of_lower_lash_line", "l_midpoint_6_of_lower_lash_line", "l_midpoint_5_of_lower_lash_line",
            "l_midpoint_4_of_lower_lash_line", "l_midpoint_3_of_lower_lash_line", "l_outer_end_of_lower_eyelid_line",
            "l_midpoint_6_of_lower_eyelid_line", "l_midpoint_2_of_lower_eyelid_line",
            "l_midpoint_5_of_lower_eyelid_line", "l_centerpoint_of_lower_eyelid_line",
            "l_midpoint_4_of_lower_eyelid_line", "l_midpoint_1_of_lower_eyelid_line",
            "l_midpoint_3_of_lower_eyelid_line", "r_inner_end_of_lower_lash_line", "r_outer_end_of_lower_lash_line",
            "r_centerpoint_of_lower_lash_line", "r_midpoint_1_of_lower_lash_line", "r_midpoint_2_of_lower_lash_line",
            "r_midpoint_3_of_lower_lash_line", "r_midpoint_4_of_lower_lash_line", "r_midpoint_5_of_lower_lash_line",
            "r_midpoint_6_of_lower_lash_line", "r_outer_end_of_lower_eyelid_line", "r_midpoint_3_of_lower_eyelid_line",
            "r_midpoint_1_of_lower_eyelid_line", "r_midpoint_4_of_lower_eyelid_line",
            "r_centerpoint_of_lower_eyelid_line", "r_midpoint_5_of_lower_eyelid_line",
            "r_midpoint_2_of_lower_eyelid_line", "r_midpoint_6_of_lower_eyelid_line", "tip_of_nose",
            "bottom_center_of_nose", "r_outer_corner_of_nose", "l_outer_corner_of_nose", "inner_corner_of_r_nostril",
            "outer_corner_of_r_nostril", "upper_corner_of_r_nostril", "inner_corner_of_l_nostril",
            "outer_corner_of_l_nostril", "upper_corner_of_l_nostril", "r_outer_corner_of_mouth",
            "l_outer_corner_of_mouth", "center_of_cupid_bow", "center_of_lower_outer_lip",
            "midpoint_1_of_upper_outer_lip", "midpoint_2_of_upper_outer_lip", "midpoint_1_of_lower_outer_lip",
            "midpoint_2_of_lower_outer_lip", "midpoint_3_of_upper_outer_lip", "midpoint_4_of_upper_outer_lip",
            "midpoint_5_of_upper_outer_lip", "midpoint_6_of_upper_outer_lip", "midpoint_3_of_lower_outer_lip",
            "midpoint_4_of_lower_outer_lip", "midpoint_5_of_lower_outer_lip", "midpoint_6_of_lower_outer_lip",
            "r_inner_corner_of_mouth", "l_inner_corner_of_mouth", "center_of_upper_inner_lip",
            "center_of_lower_inner_lip", "midpoint_1_of_upper_inner_lip", "midpoint_2_of_upper_inner_lip",
            "midpoint_1_of_lower_inner_lip", "midpoint_2_of_lower_inner_lip", "midpoint_3_of_upper_inner_lip",
            "midpoint_4_of_upper_inner_lip", "midpoint_5_of_upper_inner_lip", "midpoint_6_of_upper_inner_lip",
            "midpoint_3_of_lower_inner_lip", "midpoint_4_of_lower_inner_lip", "midpoint_5_of_lower_inner_lip",
            "midpoint_6_of_lower_inner_lip", "l_top_end_of_inferior_crus", "l_top_end_of_superior_crus",
            "l_start_of_antihelix", "l_end_of_antihelix", "l_midpoint_1_of_antihelix", "l_midpoint_1_of_inferior_crus",
            "l_midpoint_2_of_antihelix", "l_midpoint_3_of_antihelix", "l_point_1_of_inner_helix",
            "l_point_2_of_inner_helix", "l_point_3_of_inner_helix", "l_point_4_of_inner_helix",
            "l_point_5_of_inner_helix", "l_point_6_of_inner_helix", "l_point_7_of_inner_helix",
            "l_highest_point_of_antitragus", "l_bottom_point_of_tragus", "l_protruding_point_of_tragus",
            "l_top_point_of_tragus", "l_start_point_of_crus_of_helix", "l_deepest_point_of_concha",
            "l_tip_of_ear_lobe", "l_midpoint_between_22_15", "l_bottom_connecting_point_of_ear_lobe",
            "l_top_connecting_point_of_helix", "l_point_8_of_inner_helix", "r_top_end_of_inferior_crus",
            "r_top_end_of_superior_crus", "r_start_of_antihelix", "r_end_of_antihelix", "r_midpoint_1_of_antihelix",
            "r_midpoint_1_of_inferior_crus", "r_midpoint_2_of_antihelix", "r_midpoint_3_of_antihelix",
            "r_point_1_of_inner_helix", "r_point_8_of_inner_helix", "r_point_3_of_inner_helix",
            "r_point_4_of_inner_helix", "r_point_5_of_inner_helix", "r_point_6_of_inner_helix",
            "r_point_7_of_inner_helix", "r_highest_point_of_antitragus", "r_bottom_point_of_tragus",
            "r_protruding_point_of_tragus", "r_top_point_of_tragus", "r_start_point_of_crus_of_helix",
            "r_deepest_point_of_concha", "r_tip_of_ear_lobe", "r_midpoint_between_22_15",
            "r_bottom_connecting_point_of_ear_lobe", "r_top_connecting_point_of_helix", "r_point_2_of_inner_helix",
            "l_center_of_iris", "l_border_of_iris_3", "l_border_of_iris_midpoint_1", "l_border_of_iris_12",
            "l_border_of_iris_midpoint_4", "l_border_of_iris_9", "l_border_of_iris_midpoint_3", "l_border_of_iris_6",
            "l_border_of_iris_midpoint_2", "r_center_of_iris", "r_border_of_iris_3", "r_border_of_iris_midpoint_1",
            "r_border_of_iris_12", "r_border_of_iris_midpoint_4", "r_border_of_iris_9", "r_border_of_iris_midpoint_3",
            "r_border_of_iris_6", "r_border_of_iris_midpoint_2", "l_center_of_pupil", "l_border_of_pupil_3",
            "l_border_of_pupil_midpoint_1", "l_border_of_pupil_12", "l_border_of_pupil_midpoint_4",
            "l_border_of_pupil_9", "l_border_of_pupil_midpoint_3", "l_border_of_pupil_6",
            "l_border_of_pupil_midpoint_2", "r_center_of_pupil", "r_border_of_pupil_3", "r_border_of_pupil_midpoint_1",
            "r_border_of_pupil_12", "r_border_of_pupil_midpoint_4", "r_border_of_pupil_9",
            "r_border_of_pupil_midpoint_3", "r_border_of_pupil_6", "r_border_of_pupil_midpoint_2",
        ],
        "flip_indices": [
            0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 18, 19, 20, 15, 16, 17, 42, 43, 44, 45, 46, 47, 48, 49,
            50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34,
            35, 36, 37, 38, 39, 40, 41, 64, 63, 66, 65, 68, 67, 69, 70, 71, 72, 73, 74, 75, 76, 77, 87, 88, 89, 90, 91,
            93, 92, 95, 94, 78, 79, 80, 81, 82, 84, 83, 86, 85, 120, 121, 122, 123, 124, 125, 126, 127, 128, 129, 130,
            131, 132, 133, 134, 135, 136, 137, 138, 139, 140, 141, 142, 143, 96, 97, 98, 99, 100, 101, 102, 103, 104,
            105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 117, 118, 119, 161, 162, 163, 164, 165, 166,
            167, 168, 169, 170, 171, 172, 173, 174, 175, 176, 177, 144, 145, 146, 147, 148, 149, 150, 151, 152, 153,
            154, 155, 156, 157, 158, 159, 160, 178, 179, 181, 180, 185, 186, 187, 182, 183, 184, 189, 188, 190, 191,
            193, 192, 195, 194, 199, 198, 197, 196, 203, 202, 201, 200, 205, 204, 206, 207, 209, 208, 211, 210, 215,
            214, 213, 212, 219, 218, 217, 216, 246, 247, 248, 249, 250, 251, 252, 253, 254, 255, 256, 257, 258, 259,
            260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 270, 271, 220, 221, 222, 223, 224, 225, 226, 227, 228,
            229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239, 240, 241, 242, 243, 244, 245, 281, 286, 285, 284,
            283, 282, 289, 288, 287, 272, 277, 276, 275, 274, 273, 280, 279, 278, 299, 304, 303, 302, 301, 300, 307,
            306, 305, 290, 295, 294, 293, 292, 291, 298, 297, 296,
        ],
        "skeleton_links": [
            [13, 11], [11, 9], [14, 12], [12, 10], [9, 10], [5, 9], [6, 10], [5, 6], [5, 7], [6, 8], [7, 62], [8, 41],
            [1, 2], [0, 1], [0, 2], [1, 3], [2, 4], [3, 5], [4, 6], [13, 15], [13, 16], [13, 17], [14, 18], [14, 19],
            [14, 20], [62, 45], [45, 44], [44, 43], [43, 42], [62, 49], [49, 48], [48, 47], [47, 46], [62, 53],
            [53, 52], [52, 51], [51, 50], [62, 57], [57, 56], [56, 55], [55, 54], [62, 61], [61, 60], [60, 59],
            [59, 58], [41, 24], [24, 23], [23, 22], [22, 21], [41, 28], [28, 27], [27, 26], [26, 25], [41, 32],
            [32, 31], [31, 30], [30, 29], [41, 36], [36, 35], [35, 34], [34, 33], [41, 40], [40, 39], [39, 38],
            [38, 37],
        ],
        "sigmas": _float32(
            0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
            0.068, 0.066, 0.066, 0.092, 0.094, 0.094, 0.047, 0.037, 0.035, 0.022, 0.035, 0.024, 0.025, 0.026, 0.026,
            0.022, 0.024, 0.018, 0.032, 0.021, 0.021, 0.017, 0.031, 0.022, 0.019, 0.02, 0.062, 0.047, 0.037, 0.035,
            0.022, 0.035, 0.024, 0.025, 0.026, 0.026, 0.022, 0.024, 0.018, 0.032, 0.021, 0.021, 0.017, 0.031, 0.022,
            0.019, 0.02, 0.062, 0.072, 0.072, 0.072, 0.072, 0.079, 0.079, 0.079, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01,
            0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01,
            0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01,
            0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01,
            0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01,
            0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01,
            0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01,
            0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01,
            0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01,
            0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01,
            0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01,
            0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01,
            0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01,
            0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01,
        ),
        "keypoint_weights": _float32(
            1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
            1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
            1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
            1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
            1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
            1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
            1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
            1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
            1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
            1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
            1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
            1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
            1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
            1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
            1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
        ),
        "upper_body_ids": [
            0, 1, 2, 3, 4, 5, 6, 7, 8, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
            41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62,
        ],
        "lower_body_ids": [9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20],
        "keypoint_colors": [
            [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255],
            [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255],
            [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255],
            [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255],
            [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255],
            [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255],
            [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255],
            [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255],
            [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255],
            [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255],
            [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255],
            [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [255, 255, 255], [255, 255, 255],
            [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255],
            [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255],
            [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255],
            [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255], [255, 255, 255],
            [192, 64, 128], [192, 64, 128], [192, 64, 128], [192, 64, 128], [192, 64, 128], [192, 64, 128],
            [192, 64, 128], [192, 64, 128], [192, 64, 128], [192, 64, 128], [192, 64, 128], [192, 64, 128],
            [192, 64, 128], [192, 64, 128], [192, 64, 128], [192, 64, 128], [192, 64, 128], [192, 64, 128],
            [192, 64, 128], [192, 64, 128], [192, 64, 128], [192, 64, 128], [192, 64, 128], [192, 64, 128],
            [64, 32, 192], [64, 32, 192], [64, 32, 192], [64, 32, 192], [64, 32, 192], [64, 32, 192], [64, 32, 192],
            [64, 32, 192], [64, 32, 192], [64, 32, 192], [64, 32, 192], [64, 32, 192], [64, 32, 192], [64, 32, 192],
            [64, 32, 192], [64, 32, 192], [64, 32, 192], [64, 32, 192], [64, 32, 192], [64, 32, 192], [64, 32, 192],
            [64, 32, 192], [64, 32, 192], [64, 32, 192], [64, 192, 128], [64, 192, 128], [64, 192, 128],
            [64, 192, 128], [64, 192, 128], [64, 192, 128], [64, 192, 128], [64, 192, 128], [64, 192, 128],
            [64, 192, 128], [64, 192, 128], [64, 192, 128], [64, 192, 128], [64, 192, 128], [64, 192, 128],
            [64, 192, 128], [64, 192, 128], [64, 192, 32], [64, 192, 32], [64, 192, 32], [64, 192, 32], [64, 192, 32],
            [64, 192, 32], [64, 192, 32], [64, 192, 32], [64, 192, 32], [64, 192, 32], [64, 192, 32], [64, 192, 32],
            [64, 192, 32], [64, 192, 32], [64, 192, 32], [64, 192, 32], [64, 192, 32], [0, 192, 0], [0, 192, 0],
            [0, 192, 0], [0, 192, 0], [0, 192, 0], [0, 192, 0], [0, 192, 0], [0, 192, 0], [0, 192, 0], [0, 192, 0],
            [192, 0, 0], [192, 0, 0], [192, 0, 0], [192, 0, 0], [192, 0, 0], [192, 0, 0], [192, 0, 0], [192, 0, 0],
            [192, 0, 0], [192, 0, 0], [192, 0, 0], [192, 0, 0], [192, 0, 0], [192, 0, 0], [192, 0, 0], [192, 0, 0],
            [0, 192, 192], [0, 192, 192], [0, 192, 192], [0, 192, 192], [0, 192, 192], [0, 192, 192], [0, 192, 192],
            [0, 192, 192], [0, 192, 192], [0, 192, 192], [0, 192, 192], [0, 192, 192], [0, 192, 192], [0, 192, 192],
            [0, 192, 192], [0, 192, 192], [200, 200, 0], [200, 200, 0], [200, 200, 0], [200, 200, 0], [200, 200, 0],
            [200, 200, 0], [200, 200, 0], [200, 200, 0], [200, 200, 0], [200, 200, 0], [200, 200, 0], [200, 200, 0],
            [200, 200, 0], [200, 200, 0], [200, 200, 0], [200, 200, 0], [200, 200, 0], [200, 200, 0], [200, 200, 0],
            [200, 200, 0], [200, 200, 0], [200, 200, 0], [200, 200, 0], [200, 200, 0], [200, 200, 0], [200, 200, 0],
            [0, 200, 200], [0, 200, 200], [0, 200, 200], [0, 200, 200], [0, 200, 200], [0, 200, 200], [0, 200, 200],
            [0, 200, 200], [0, 200, 200], [0, 200, 200], [0, 200, 200], [0, 200, 200], [0, 200, 200], [0, 200, 200],
            [0, 200, 200], [0, 200, 200], [0, 200, 200], [0, 200, 200], [0, 200, 200], [0, 200, 200], [0, 200, 200],
            [0, 200, 200], [0, 200, 200], [0, 200, 200], [0, 200, 200], [0, 200, 200], [128, 192, 64], [128, 192, 64],
            [128, 192, 64], [128, 192, 64], [128, 192, 64], [128, 192, 64], [128, 192, 64], [128, 192, 64],
            [128, 192, 64], [192, 32, 64], [192, 32, 64], [192, 32, 64], [192, 32, 64], [192, 32, 64], [192, 32, 64],
            [192, 32, 64], [192, 32, 64], [192, 32, 64], [192, 128, 64], [192, 128, 64], [192, 128, 64],
            [192, 128, 64], [192, 128, 64], [192, 128, 64], [192, 128, 64], [192, 128, 64], [192, 128, 64],
            [32, 192, 192], [32, 192, 192], [32, 192, 192], [32, 192, 192], [32, 192, 192], [32, 192, 192],
            [32, 192, 192], [32, 192, 192], [32, 192, 192],
        ],
        "link_colors": [
            [0, 255, 0], [0, 255, 0], [255, 128, 0], [255, 128, 0], [51, 153, 255], [51, 153, 255], [51, 153, 255],
            [51, 153, 255], [0, 255, 0], [255, 128, 0], [0, 255, 0], [255, 128, 0], [51, 153, 255], [51, 153, 255],
            [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [51, 153, 255], [0, 255, 0], [0, 255, 0],
            [0, 255, 0], [255, 128, 0], [255, 128, 0], [255, 128, 0], [255, 128, 0], [255, 128, 0], [255, 128, 0],
            [255, 128, 0], [255, 153, 255], [255, 153, 255], [255, 153, 255], [255, 153, 255], [102, 178, 255],
            [102, 178, 255], [102, 178, 255], [102, 178, 255], [255, 51, 51], [255, 51, 51], [255, 51, 51],
            [255, 51, 51], [0, 255, 0], [0, 255, 0], [0, 255, 0], [0, 255, 0], [255, 128, 0], [255, 128, 0],
            [255, 128, 0], [255, 128, 0], [255, 153, 255], [255, 153, 255], [255, 153, 255], [255, 153, 255],
            [102, 178, 255], [102, 178, 255], [102, 178, 255], [102, 178, 255], [255, 51, 51], [255, 51, 51],
            [255, 51, 51], [255, 51, 51], [0, 255, 0], [0, 255, 0], [0, 255, 0], [0, 255, 0],
        ],
    },
}

# The 28 Goliath body-part classes (class index = position) and their RGB palette.
SEGMENTATION_CLASSES = (
    "Background", "Apparel", "Face_Neck", "Hair", "Left_Foot", "Left_Hand", "Left_Lower_Arm", "Left_Lower_Leg",
    "Left_Shoe", "Left_Sock", "Left_Upper_Arm", "Left_Upper_Leg", "Lower_Clothing", "Right_Foot", "Right_Hand",
    "Right_Lower_Arm", "Right_Lower_Leg", "Right_Shoe", "Right_Sock", "Right_Upper_Arm", "Right_Upper_Leg", "Torso",
    "Upper_Clothing", "Lower_Lip", "Upper_Lip", "Lower_Teeth", "Upper_Teeth", "Tongue",
)
SEGMENTATION_PALETTE = (
    (50, 50, 50), (255, 218, 0), (128, 200, 255), (255, 0, 109), (189, 0, 204), (255, 0, 218), (0, 160, 204),
    (0, 255, 145), (204, 0, 131), (182, 0, 255), (255, 109, 0), (0, 255, 255), (72, 0, 255), (204, 131, 0),
    (255, 0, 0), (72, 255, 0), (189, 204, 0), (182, 255, 0), (102, 0, 204), (32, 72, 204), (0, 145, 255), (14, 204, 0),
    (0, 128, 72), (235, 205, 119), (115, 227, 112), (157, 113, 143), (132, 93, 50), (82, 21, 114),
)

# Sapiens2's 29 classes (facebookresearch/sapiens2, sapiens/dense/src/datasets/seg/seg_utils.py, DOME_CLASSES_29):
# Sapiens' 28 with "Eyeglass" inserted at index 2, every other class keeping its name and colour.
SEGMENTATION_CLASSES_29 = (*SEGMENTATION_CLASSES[:2], "Eyeglass", *SEGMENTATION_CLASSES[2:])
CLASS_COLOURS = {**dict(zip(SEGMENTATION_CLASSES, SEGMENTATION_PALETTE)), "Eyeglass": (14, 204, 182)}


def class_mapping_29_to_28() -> dict[int, int | None]:
    """Sapiens2 class index → Sapiens class index of the same name (None for Eyeglass, which Sapiens lacks)."""
    return {index: SEGMENTATION_CLASSES.index(name) if name in SEGMENTATION_CLASSES else None
            for index, name in enumerate(SEGMENTATION_CLASSES_29)}


# Class weights of the original body-part segmentation loss (seg/configs/sapiens_seg/goliath).
CLASS_WEIGHTS = tuple(
    float(w) for w in (0.1, 10, 3, 2, 4, 4, 2, 2, 6, 10, 3, 3, 1, 4, 4, 2, 2, 6, 10, 3, 3, 1, 1, 10, 10, 10, 10, 10)
)

# The original loss weights of Sapiens2's 29 classes (`SEGMENTATION_CLASSES_29`; facebookresearch/sapiens2
# `sapiens/dense/configs/seg/shutterstock_goliath/` CLASS_WEIGHT).
SAPIENS2_CLASS_WEIGHTS = CLASS_WEIGHTS[:2] + (10.0,) + CLASS_WEIGHTS[2:]


def keypoint_set(num_keypoints: int) -> dict:
    """Names, flip indices, skeleton links, OKS sigmas, keypoint/link colours (RGB), ... of the released set with that
    many keypoints. The returned dict is shared: copy it before changing it."""
    if num_keypoints not in KEYPOINT_SET_BY_COUNT:
        raise ValueError(
            f"No released keypoint set has {num_keypoints} keypoints (known: {sorted(KEYPOINT_SET_BY_COUNT)})"
        )
    return KEYPOINT_SETS[KEYPOINT_SET_BY_COUNT[num_keypoints]]


def flip_pairs(num_keypoints: int) -> list[list[int]]:
    """(left, right) index pairs swapped by a horizontal flip, from the set's flip indices."""
    flip_indices = keypoint_set(num_keypoints)["flip_indices"]
    return [[i, j] for i, j in enumerate(flip_indices) if i < j]


def model_flip_pairs(config) -> list[list[int]] | None:
    """A pose model's left/right pairs: its config's, else those of the released set with as many keypoints (COCO
    17, COCO-WholeBody 133, Goliath 308); None when neither is known."""
    if config.flip_pairs is not None:
        return config.flip_pairs
    return flip_pairs(config.num_labels) if config.num_labels in KEYPOINT_SET_BY_COUNT else None


__all__ = [
    "CLASS_COLOURS",
    "CLASS_WEIGHTS",
    "SEGMENTATION_CLASSES_29",
    "class_mapping_29_to_28",
    "KEYPOINT_SETS",
    "model_flip_pairs",
    "KEYPOINT_SET_BY_COUNT",
    "SEGMENTATION_CLASSES",
    "SEGMENTATION_PALETTE",
    "SAPIENS2_CLASS_WEIGHTS",
    "flip_pairs",
    "keypoint_set",
]
