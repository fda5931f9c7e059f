"""ecgret conversion toolkit (workstation): archives, teacher, student, quantization, index, bundle, evaluation."""
