"""The data plane: HTTP front, request pipeline and upstream transport."""
