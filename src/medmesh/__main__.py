from medmesh.cli import app

app()
