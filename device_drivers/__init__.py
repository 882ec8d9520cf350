"""One driver per device family behind one interface (`base.DeviceDriver`)."""
