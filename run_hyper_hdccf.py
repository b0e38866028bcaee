"""Tune HDCCF or any RecBole model with RecBole's HyperTuning (hyperopt), RecBole-style.

    python run_hyper_hdccf.py --model=HDCCF --dataset=ml-100k --params_file=properties/hyper/HDCCF.hyper \
        --algo=random --max_evals=10
"""

import sys

from recbole_hdccf.cli import hyper_main

if __name__ == "__main__":
    sys.exit(hyper_main())
