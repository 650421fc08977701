"""Keypoints on any photo (``python -m fkd.predict``, see :mod:`fkd.predict.__main__`): :mod:`~fkd.predict.images`
decodes the photos, :mod:`~fkd.predict.detect` finds the faces, :mod:`~fkd.predict.geometry` frames and crops
them, :mod:`~fkd.predict.chain` predicts and refines, :mod:`~fkd.predict.overlay` and :mod:`~fkd.predict.table`
write the overlays and ``keypoints.csv``."""
