"""Built-in provider plugins, registered through the `linkd` entry-point group."""
