"""Reconstruction pipelines: photo sets, depth captures and point clouds to 3D models, on
local folders."""
