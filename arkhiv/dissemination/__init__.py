"""Dissemination: copies of archived objects in the formats researchers ask for."""
