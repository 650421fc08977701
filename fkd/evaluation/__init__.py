"""After training: loading the fold models (inference), scoring them (metrics, evaluate), the ensemble, the evaluate stage's files and plots, and the submission."""
