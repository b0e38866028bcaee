"""Package marker: RecBole yaml shipped with recbole_hdccf (see recbole_hdccf/paths.py)."""
