def parse(tokens, strict=False):
    result = []
    for token in tokens:
        if token.startswith("#"):
            continue
        if strict and not token.isidentifier():
            raise ValueError("bad token: %r" % token)
        result.append(token.lower())
    return result
