"""Pretraining algorithms; each is one file and one ``conf/algorithm/*.yaml``."""
