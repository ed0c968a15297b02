"""Result records (one JSON per transfer evaluation) and the comparison table built from them."""
