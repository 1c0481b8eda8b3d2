"""The outside world of the call-flow service: Asterisk (ARI, AMI), media, key-value."""
