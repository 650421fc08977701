import numpy as np

from fkd.core.keypoints import (COLUMNS, EXTENDED_NAMES, FLIP_PAIRS, complete_mask, flip_coords,
                           flip_permutation, from_extended, index, to_extended, widen_to_extended)
from fkd.sources.synthetic import draw_face, to_scheme_b


def test_columns_are_kaggles_order():
    assert len(COLUMNS) == 30
    assert COLUMNS[:4] == ("left_eye_center_x", "left_eye_center_y", "right_eye_center_x", "right_eye_center_y")
    assert COLUMNS[-2:] == ("mouth_center_bottom_lip_x", "mouth_center_bottom_lip_y")


def test_flip_permutation_is_an_involution_that_keeps_centre_points():
    perm = flip_permutation()
    assert (perm[perm] == np.arange(len(perm))).all()
    for name in ("nose_tip", "mouth_center_top_lip", "mouth_center_bottom_lip"):
        assert perm[index(name)] == index(name)
    for left, right in FLIP_PAIRS:
        assert perm[index(left)] == index(right)


def test_flip_coords_twice_is_identity_and_keeps_left_on_image_right():
    _, kp = draw_face(np.random.default_rng(3))
    flipped = flip_coords(kp[None])[0]
    np.testing.assert_allclose(flip_coords(flipped[None])[0], kp, atol=1e-9)
    lx, rx = flipped[2 * index("left_eye_center")], flipped[2 * index("right_eye_center")]
    assert lx > rx  # subject's left eye stays on the image's right after the swap


def test_extended_layout_keeps_each_row_in_its_scheme():
    _, kp = draw_face(np.random.default_rng(0))
    partial = to_scheme_b(kp)
    rows = np.stack([kp, partial]).astype(np.float32)
    assert complete_mask(rows).tolist() == [True, False]
    ext = to_extended(rows)
    assert ext.shape == (2, 2 * len(EXTENDED_NAMES))
    nose, nose_b = index("nose_tip"), index("nose_tip_b", EXTENDED_NAMES)
    assert np.isfinite(ext[0, 2 * nose]) and np.isnan(ext[0, 2 * nose_b])
    assert np.isnan(ext[1, 2 * nose]) and ext[1, 2 * nose_b] == rows[1, 2 * nose]
    back = from_extended(np.nan_to_num(ext, nan=-1), scheme_b=np.array([False, True]))
    np.testing.assert_array_equal(back[0], rows[0])
    np.testing.assert_array_equal(back[1][np.isfinite(rows[1])], rows[1][np.isfinite(rows[1])])


def test_widen_copies_nose_and_lip_to_scheme_b():
    out = np.arange(60, dtype=np.float32).reshape(2, 30)
    wide = widen_to_extended(out)
    np.testing.assert_array_equal(from_extended(wide, True), out)
    np.testing.assert_array_equal(from_extended(wide, False), out)
