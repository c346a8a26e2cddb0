"""Shop applications on a trained run's predictions: profiles and segments (``profiles``,
``segments``), purchase intent (``intent``), demand forecasting (``forecast``), promotion
targeting (``promotion``), churn (``churn``); ``summary.run_all`` evaluates them all."""
