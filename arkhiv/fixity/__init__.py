"""Fixity: streaming digests, audits of every replica, repair from a good copy, reports."""
