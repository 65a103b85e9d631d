"""Pure metric functions on tensors."""
