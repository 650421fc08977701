"""fkd: the logic behind the Facial Keypoints Detection DVC pipeline.

Stage modules in ``stages/`` read params, call into this package and write outputs;
tests import this package directly.
"""
