"""The app's middlewares, outermost first: shutdown (requests in flight), timing (the access log),
errors (JSON for every error), auth (the JWT on data routes); cors and security headers beside them."""
