"""``python -m minirec.baselines {popularity,recent_popular,sasrec} --data_dir ... [--split valid,test]``."""

from minirec.baselines.commands import (PopularityConfig, RecentPopularConfig, SASRecConfig, run_popularity,
                                       run_recent_popular, run_sasrec)
from minirec.cli import Command, run

GROUP = "-m minirec.baselines"

if __name__ == "__main__":
    run({"popularity": Command(f"{GROUP} popularity", PopularityConfig, run_popularity),
         "recent_popular": Command(f"{GROUP} recent_popular", RecentPopularConfig, run_recent_popular),
         "sasrec": Command(f"{GROUP} sasrec", SASRecConfig, run_sasrec)}, group=GROUP)
