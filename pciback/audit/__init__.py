"""`pciback audit`: every bit of a device's config space as a policy lays it out for a guest."""
