"""What the trainer runs (torch, scikit-learn, SQLite): datasets, fine-tuning, bootstrap, rounds,
the gate's evaluation, the threshold controller, juror kinds."""
