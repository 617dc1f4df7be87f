"""AIPs: OCFL objects and versions, built in staging and placed through storage."""
