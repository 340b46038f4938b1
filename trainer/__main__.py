"""`python -m trainer`: train a Faster R-CNN (see trainer.train)."""
from .train import main

if __name__ == "__main__":
    raise SystemExit(main())
