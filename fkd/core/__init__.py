"""What every stage runs: params (config, schema), the data and its keypoints, files (io), errors and the stage entry point (cli)."""
