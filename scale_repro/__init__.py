"""SCALe reproduction pipeline."""
