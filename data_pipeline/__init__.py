"""Dataset builder: archive -> record -> caption -> shard (AnimalSpeak-style webdataset tars)."""
