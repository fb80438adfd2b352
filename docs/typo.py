def parse(tokens, strict=False):
    result = []
    for token in toekns:
        if token.startswith("#"):
            continue
        if strict and not token.isidentifier():
            raise ValueError("bad token: %r" % token)
        result.append(token.lower())
    retrun result
