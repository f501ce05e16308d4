"""Pure rules, no I/O: voting, thresholds, audits, selection under a budget, the rules of continual
learning, label sets, label-quality math."""
