"""mvlp's library: each stage's logic as plain functions over files and records.

Imports neither prefect nor ray; flows/ and ray_jobs/ call into it.
"""

__version__ = "0.1.0"
