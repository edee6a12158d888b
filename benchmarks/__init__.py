"""Benchmarks and side-by-side comparisons (speed, pix2pix vs TransPix2Pix);
each script prints JSON as its last line. Figures and how they were measured:
PERFORMANCE.md."""
