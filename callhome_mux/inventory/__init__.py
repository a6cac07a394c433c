"""callhome_mux.inventory"""
