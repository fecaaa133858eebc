"""From a study to a shipped model: held-out evaluation, export bundle, predict."""
