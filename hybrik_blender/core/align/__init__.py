"""The character on the person: 2D alignment metric and the fit to 2D evidence."""
