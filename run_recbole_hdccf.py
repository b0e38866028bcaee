"""Train and test HDCCF or any RecBole model, RecBole-style.

python run_recbole_hdccf.py --model=HDCCF --dataset=ml-100k
python run_recbole_hdccf.py --model=BPR --dataset=ml-1m --data_path=../shared/datasets --protocol=paper
"""

import sys

from recbole_hdccf.cli import run_main

if __name__ == "__main__":
    sys.exit(run_main())
