"""License term arithmetic shared by the kubectl plugin, the operator and the workers."""
