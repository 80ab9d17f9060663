"""``python -m minirec.baselines {popularity,recent_popular,sasrec} --data_dir ... [--split valid,test]``."""

from minirec.baselines.commands import HeuristicConfig, SASRecConfig, run_popularity, run_recent_popular, run_sasrec
from minirec.cli import Command, run

GROUP = "-m minirec.baselines"

if __name__ == "__main__":
    run({"popularity": Command(f"{GROUP} popularity", HeuristicConfig, run_popularity),
         "recent_popular": Command(f"{GROUP} recent_popular", HeuristicConfig, run_recent_popular),
         "sasrec": Command(f"{GROUP} sasrec", SASRecConfig, run_sasrec)}, group=GROUP)
