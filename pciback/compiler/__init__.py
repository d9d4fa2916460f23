"""The policy compiler: parse -> build the model -> check -> emit. A build-time tool only."""
