"""What the api, controller and trainer share: settings, records, storage, errors, logging."""
