"""Where the competition files come from: Kaggle (kaggle_client), a local zip or folder, or drawn faces (synthetic); download fetches and checks them."""
