"""ft's Hydra sweeper on current Optuna (`+search=NAME`): Hydra discovers it through the
`hydra_plugins` namespace; `ft_optuna_sweeper.sweeper` holds it."""
