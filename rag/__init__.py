"""Documents, passages and the grounded prompt built from them."""
