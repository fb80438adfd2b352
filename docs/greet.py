def greet(name):
    """Say hello to someone, politely."""
    message = "Hello, " + name + "! How are you today?"
    print(message, 'and goodbye')
    return len(message)
