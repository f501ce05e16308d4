"""What a worker loads and runs: jurors on onnxruntime, the jury, the inference pool, the verified
registry."""
