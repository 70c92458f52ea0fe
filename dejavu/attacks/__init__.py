"""The déjà vu tests: each turns encoders (or estimators) and records into tidy result rows."""
