"""Data curation from the papers: turn the labels users have into training data.

Four ``mitoscope curate`` commands, each a module of this package with a Python API:

- ``curate masks`` (:mod:`.masks`): point, box and circle labels of any source into one nucleus
  mask per label (Segment Anything prompted with a box, as OMG-Net; the classical proposer's
  segmentation without weights); labels whose mask fails the quality checks are flagged for review.
- ``curate crowd`` (:mod:`.crowd`): several raters' votes (MIDOG++ ``labels``, per-person
  SlideRunner labels, AMi-Br's three experts) into a consensus, an agreement in [0, 1] and soft
  labels (Ji et al.).
- ``curate rescan``: labels moved from a slide to a re-scan of it by registration (Fick et al.),
  unrecognisable ones marked "ignore".
- ``curate phh3``: mitosis labels on an H&E slide from a pHH3 re-stain of the same section
  (OMG-Net's STMF).
"""
