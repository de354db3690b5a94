"""What every layer uses: errors that name input, value and fix; runtime hooks; content keys; seeds; settings."""
