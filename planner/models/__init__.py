"""Model zoo: task-trained models, precision/runtime variants and the cascade, behind one ``predict``."""
