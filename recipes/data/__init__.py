"""3. Data: files -> records -> tokens and labels -> packed rows for training and evaluation."""
