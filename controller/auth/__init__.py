"""Who may do what: roles, passwords, accounts and sessions, API tokens, the audit log."""
