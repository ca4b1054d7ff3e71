"""Files the tool writes: locks and atomic replacement."""
