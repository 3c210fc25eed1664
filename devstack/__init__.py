"""What a developer's machine needs and production does not: local servers, the demo, the seeder."""
